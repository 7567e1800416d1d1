"""A study with nothing to find: dose labels permuted between wells before anything else.

The whole pipeline (shipped checkpoint, fine-tune, control runs, run-level null, verdict) must say
that the model did not learn, and the run-level null must find no task-attributable change even
without the gate on learning (its ungated counts), at FDR 0.05 with training runs as units.
"""

from __future__ import annotations

import pytest

from geneattn._results import Results
from geneattn.study import StudyConfig, run_study
from geneattn.study.task import NULL_KEY


@pytest.fixture(scope="module")
def null_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("null") / "res"
    cfg = StudyConfig(out=str(out), permute_labels=True, cells_per_dose=45, finetune_epochs=2,
                      model_input_size=128, n_boot=20, attribution_cells=0, ablation_top_k=0, top_k=10,
                      device="cpu", min_cells_per_class=5)  # fmt: skip
    run_study(cfg, progress=False)
    return Results(out).read_metrics()


def test_permuted_labels_did_not_learn(null_study):
    v = null_study["verdict"]
    assert v["learned"]["learned"] is False
    assert "did not learn" in v["learned"]["text"]
    assert null_study["classification"]["flags"]["learned"] is False


def test_permuted_labels_give_no_task_attributable_change(null_study):
    null = null_study["task_attributable"][NULL_KEY]
    fam = null["families"]
    assert fam, null
    assert sum(c["n_significant"] for c in fam.values()) == 0  # gated
    assert sum(c["n_significant_ungated"] for c in fam.values()) == 0  # and without the gate
    assert null_study["verdict"]["task_change"]["n_discoveries"] == 0
