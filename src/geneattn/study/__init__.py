"""The study: its configuration, its stages and running them.

``geneattn run`` is `run_study`: the stages data -> qc -> tokenize -> pretrain -> finetune ->
attention -> stats -> figures -> report, each declared beside its code with the config fields it reads
(`geneattn.study._stage`), run through the cached engine `geneattn.pipeline`.
"""

from __future__ import annotations

from .._results import Results
from ._stage import STAGES, StageContext, key_params
from .config import StudyConfig, dump_toml, load_toml, merge
from .runner import rebuild_report, run_study, stages

__all__ = ["StudyConfig", "load_toml", "dump_toml", "merge", "run_study", "rebuild_report", "stages", "STAGES",
           "stats_of_results"]  # fmt: skip


def stats_of_results(results_dir: str, **overrides: object) -> str:
    """`geneattn stats`: the study's stats stage on an existing results directory.

    The configuration is the directory's ``config.toml`` (defaults when it has none) with ``overrides``;
    the attribution and stats stages write the same tables, ``cells.h5ad`` annotations and
    ``metrics.json`` as `run_study`.
    """
    res = Results(results_dir)
    if not res.cells.is_file():
        res.read_cells()  # the one MissingResult message for a directory that holds no study
    saved = load_toml(res.config) if res.config.is_file() else {}
    cfg = StudyConfig.from_dict(
        {**saved, "out": str(res.root), **{k: v for k, v in overrides.items() if v is not None}}
    )
    summary = ""
    for name in ("attribution", "stats"):
        spec = STAGES[name]
        summary = spec.run(StageContext(res, spec.view(cfg), key_params(spec, cfg), spec.name)) or ""
    return summary
