"""The study: its configuration, its stages and running them.

``geneattn run`` is `run_study`: the stages data -> qc -> tokenize -> pretrain -> finetune ->
attention -> stats -> figures -> report, each declared beside its code with the config fields it reads
(`geneattn.study._stage`), run through the cached engine `geneattn.pipeline`.

The configuration (`StudyConfig`) imports nothing heavy, so the command line can build its options from
it; the runner and the stages (torch, scanpy, ...) load on first use of a name that needs them.
"""

from __future__ import annotations

from typing import Any

from .config import StudyConfig, dump_toml, load_toml, merge

__all__ = ["StudyConfig", "load_toml", "dump_toml", "merge", "run_study", "rebuild_report", "stages", "STAGES",
           "stats_of_results", "run_part"]  # fmt: skip

_RUNNER = ("run_study", "rebuild_report", "stages", "stats_of_results", "run_part", "STAGES")


def __getattr__(name: str) -> Any:
    if name in _RUNNER:  # importing the runner registers every stage (STAGES)
        from . import runner

        return runner.STAGES if name == "STAGES" else getattr(runner, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
