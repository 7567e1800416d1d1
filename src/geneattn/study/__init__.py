"""The study: its configuration, its stages and running them.

``geneattn run`` is `run_study`: the stages data -> qc -> tokenize -> pretrain -> finetune ->
attention -> stats -> figures -> report, each declared beside its code with the config fields it reads
(`geneattn.study._stage`), run through the cached engine `geneattn.pipeline`.
"""

from __future__ import annotations

from ._stage import STAGES
from .config import StudyConfig, dump_toml, load_toml, merge
from .runner import rebuild_report, run_part, run_study, stages, stats_of_results

__all__ = ["StudyConfig", "load_toml", "dump_toml", "merge", "run_study", "rebuild_report", "stages", "STAGES",
           "stats_of_results", "run_part"]  # fmt: skip
