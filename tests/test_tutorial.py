"""``docs/tutorial.ipynb`` runs on a few cells: its code cells, in order, in one namespace.

nbclient/ipykernel are not dependencies: the cells are read from the notebook's JSON and executed
here. ``GENEATTN_TUTORIAL_SMALL=1`` makes the notebook's data small.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _code_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_tutorial_runs_and_makes_the_study_figures(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    monkeypatch.setenv("GENEATTN_TUTORIAL_SMALL", "1")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the notebook's OUT lands in tmp_path
    ns: dict = {"__name__": "__tutorial__"}
    for i, src in enumerate(_code_cells()):
        try:
            exec(compile(src, f"{NOTEBOOK.name}[code cell {i}]", "exec"), ns)  # noqa: S102
        except Exception as e:  # pragma: no cover - the message names the failing cell
            pytest.fail(f"code cell {i} failed: {type(e).__name__}: {e}\n{src}")
    adata = ns["adata"]
    assert ns["SMALL"] and adata.n_obs == 32
    assert {"gene_attention", "gene_attention_groups", "attention_change", "gene_attention_ft"} <= set(
        adata.varm
    )
    assert list(adata.uns["gene_attention"]["groups"]) == ["0.1", "0.5", "5", "10"]
    for name in ("fig_top", "fig_by_dose", "fig_change"):
        assert isinstance(ns[name], Figure), name
        plt.close(ns[name])
    assert set(ns["mdm2_rank"]) == {"pretrained", "fine-tuned"}
    assert all(1 <= r <= len(ns["before"]) for r in ns["mdm2_rank"].values())
    assert (ns["ft"].model_dir / "metrics.json").is_file() and str(ns["ft"].model_dir).startswith(
        str(tmp_path)
    )
