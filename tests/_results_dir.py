"""Make a hand-built results directory a geneattn one: ``config.toml`` and a manifest whose upstream
stages are done for that configuration (as if `geneattn run` had made them)."""

from __future__ import annotations

from geneattn._atomic import write_json
from geneattn._results import Results
from geneattn.pipeline import MANIFEST_VERSION, hashes
from geneattn.study import StudyConfig, dump_toml, stages

#: the stages a hand-built fixture leaves to the test (``geneattn stats`` and ``geneattn report``)
NOT_DONE = ("attribution", "stats", "figures", "report")


def as_study(res: Results, **config: object) -> StudyConfig:
    """Write ``config.toml`` and ``manifest.json`` (every stage but `NOT_DONE` done); returns the config."""
    cfg = StudyConfig.from_dict({"out": str(res.root), "device": "cpu", **config}).resolved()
    res.config.write_text(dump_toml(cfg.to_dict()))
    entries = {n: {"name": n, "status": "done", "hash": h, "seconds": 0.0, "summary": "fixture"}
               for n, h in hashes(stages(cfg)).items() if n not in NOT_DONE}  # fmt: skip
    write_json(res.manifest, {"version": MANIFEST_VERSION, "stages": entries})
    return cfg
