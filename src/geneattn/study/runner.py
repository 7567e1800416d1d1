"""Running the study: every stage in order through the cached engine (`geneattn.pipeline`)."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import time
from collections.abc import Callable

from .. import __version__
from .._atomic import write_text
from .._lock import results_lock
from .._results import Results
from ..errors import InputError
from ..pipeline import MANIFEST_VERSION, Context, Stage, hashes, order, read_manifest, run_stages
from ._stage import STAGES, StageContext, StageSpec, key_params
from .config import StudyConfig, dump_toml, load_toml, merge
from .preflight import check_config, check_results_files
from .tokens import annotate_input_size, input_size_note

__all__ = [
    "run_study",
    "stages",
    "rebuild_report",
    "run_part",
    "stats_of_results",
    "STATS_PART",
    "REPORT_PART",
]

#: what `geneattn stats` runs (always), and the stage its options may re-key besides (run when they do)
STATS_PART, _STATS_MAY_RERUN = ("attribution", "stats"), ("ablation",)
#: what `geneattn report` runs
REPORT_PART = ("figures", "report")

logger = logging.getLogger(__name__)

# importing the stage modules registers their stages; this order is the study's order
for _module in (
    "data",
    "tokens",
    "plan",
    "training",
    "attention",
    "controls",
    "causal",
    "statistics",
    "reporting",
):
    importlib.import_module(f"{__package__}.{_module}")


def _runner(spec: StageSpec, cfg: StudyConfig, params: dict[str, object]) -> Callable[[Context], str | None]:
    def run(ctx: Context) -> str | None:
        return spec.run(StageContext(Results(ctx.out), spec.view(cfg), params, spec.name))

    return run


def stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stages for a resolved config, in dependency order (``data`` first).

    Each stage's parameters are derived from the config fields it declares it reads.
    """
    out = []
    for spec in STAGES.values():
        params = key_params(spec, cfg)
        out.append(Stage(spec.name, _runner(spec, cfg, params), spec.deps, params, spec.output_paths(cfg)))
    return order(out)


def _pin_torch_threads(all_stages: list[Stage]) -> list[Stage]:
    """Run every stage with the torch thread count this process started with.

    scanpy's PCA (through threadpoolctl) raises the OpenMP thread count that torch shares, so without
    this a run whose ``qc`` stage ran trains with more threads than a resumed run that skipped it:
    float reductions then differ, and a resumed run no longer reproduces an uninterrupted one.
    """
    import torch

    n = torch.get_num_threads()

    def pinned(fn: Callable[[Context], str | None]) -> Callable[[Context], str | None]:
        def run_pinned(ctx: Context) -> str | None:
            torch.set_num_threads(n)
            try:
                return fn(ctx)
            finally:
                torch.set_num_threads(n)

        return run_pinned

    return [dataclasses.replace(s, run=pinned(s.run)) for s in all_stages]


def _record_timings(res: Results, manifest: dict, *, wall: float) -> None:
    """Add the stages' timings (from the manifest) to ``metrics.json``."""
    if not res.metrics.is_file():
        return
    st = manifest.get("stages", {})
    res.update_metrics(
        timings={"stages_s": {k: v.get("seconds") for k, v in st.items()}, "last_run_wall_s": round(wall, 2)}
    )


def run_study(config: StudyConfig, *, force: bool = False, progress: bool | None = None) -> dict:
    """Run the whole study for a `StudyConfig`; returns the manifest.

    Every option is validated before anything is written (`StudyConfig` and `StudyConfig.resolved`), and
    bad input found by the data stage leaves no new results directory behind.
    """
    if not isinstance(config, StudyConfig):
        msg = f"run_study needs a StudyConfig, got {type(config).__name__}"
        raise TypeError(msg)
    cfg = config.resolved()
    check_config(cfg)  # what later stages need, and an --out that spares the inputs, before any write
    res = Results(cfg.out)
    created = not res.root.exists()
    with results_lock(res.root):  # a second run on the same --out fails at once, naming this one
        return _run_locked(cfg, res, created=created, force=force, progress=progress)


def _ancestors(all_stages: list[Stage], name: str) -> list[Stage]:
    """``name`` and every stage it depends on, in run order."""
    by_name, need, todo = {s.name: s for s in all_stages}, set(), [name]
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo.extend(by_name[n].deps)
    return [s for s in all_stages if s.name in need]


class _Eta:
    """Logs the plan once, then after every heavy stage what is left, scaled by how the estimates held."""

    def __init__(self, res: Results) -> None:
        self.res, self.plan, self.estimated, self.actual = res, {}, 0.0, 0.0

    def load(self) -> None:
        from .plan import format_plan

        if not self.res.plan.is_file():
            return
        self.plan = self.res.read_json(self.res.plan)
        logger.info("%s", format_plan(self.plan))
        manifest = self.res.read_json(self.res.manifest)
        manifest["plan"] = self.plan
        from .._atomic import write_json

        write_json(self.res.manifest, manifest)

    def done(self, name: str, seconds: float, cached: bool) -> None:  # noqa: FBT001 - the engine calls it positionally
        planned = (self.plan.get("stages") or {}).get(name)
        if planned is None:
            return
        self.plan["stages"].pop(name)
        if not cached:
            self.estimated, self.actual = self.estimated + planned, self.actual + seconds
        left = sum(self.plan["stages"].values()) * (self.actual / self.estimated if self.estimated else 1.0)
        if self.plan["stages"] and not cached:
            logger.info(
                "plan: %s took %.0f s (estimated %.0f s); about %.0f s of heavy stages left",
                name,
                seconds,
                planned,
                left,
            )


def _run_locked(cfg: StudyConfig, res: Results, *, created: bool, force: bool, progress: bool | None) -> dict:
    ctx = Context(res.root, cfg)
    all_stages = stages(cfg)
    t0 = time.perf_counter()
    try:  # the data stage first: bad input is found before anything else is written
        run_stages(all_stages[:1], res.root, ctx=ctx, force=force, progress=False)
    except InputError:  # OutputError too (a full disk): nothing half-written is left
        if created:
            shutil.rmtree(res.root, ignore_errors=True)
        raise
    all_stages = _pin_torch_threads(all_stages)
    _write_config(res, cfg)
    first = _ancestors(all_stages, "plan")  # the plan within the first minute, before the heavy stages
    run_stages(
        first, res.root, ctx=ctx, force=[s.name for s in first[1:]] if force else False, progress=progress
    )
    eta = _Eta(res)
    eta.load()
    forced = [s.name for s in all_stages if s not in first] if force else False
    manifest = run_stages(all_stages, res.root, ctx=ctx, force=forced, progress=progress, on_done=eta.done)
    _record_timings(res, manifest, wall=time.perf_counter() - t0)
    return manifest


def _write_config(res: Results, cfg: StudyConfig) -> None:
    """``config.toml``: the resolved configuration (``geneattn run --config`` reproduces the run)."""
    header = (
        f"geneattn {__version__} resolved study configuration\nreproduce: geneattn run --config {res.config}"
    ) + input_size_note(cfg)
    write_text(res.config, annotate_input_size(dump_toml(cfg.to_dict(), header=header), cfg))


def _check_results_dir(res: Results) -> None:
    """`InputError` unless ``res`` is a geneattn results directory (before anything is written there)."""
    if not res.root.is_dir():
        msg = f"results directory {res.root} does not exist"
        raise InputError(msg)
    if not res.manifest.is_file() or not res.config.is_file():
        msg = f"{res.root} is not a geneattn results directory (no manifest.json or config.toml); run `geneattn run` first"
        raise InputError(msg)
    manifest = res.read_json(res.manifest)
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("stages"), dict):
        msg = f"{res.manifest} is not a geneattn manifest (another tool's folder?); nothing was changed"
        raise InputError(msg)
    check_results_files(res)


def _is_done(manifest: dict, name: str, key: str) -> bool:
    entry = manifest["stages"].get(name) or {}
    return entry.get("status") == "done" and entry.get("hash") == key


def run_part(
    results_dir: str, part: tuple[str, ...], overrides: dict[str, object], *, may_rerun: tuple[str, ...] = ()
) -> dict:
    """Run the stages ``part`` of an existing results directory through the engine; returns the manifest.

    The saved ``config.toml`` with ``overrides`` (None: not given) is the configuration; it is written
    back, and the stages are keyed exactly as in `run_study`, so a later ``geneattn run --config
    DIR/config.toml`` finds them done. Every stage they depend on must be done for this configuration
    (``may_rerun`` stages are re-run when an override re-keys them); otherwise nothing is written and
    the `InputError` names the stages that ``geneattn run`` must redo. Holds the results lock.
    """
    res = Results(results_dir)
    _check_results_dir(res)
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = merge(load_toml(res.config), {**given, "out": str(res.root)}).resolved()
    with results_lock(res.root, command=f"geneattn {part[-1]}"):
        manifest, all_stages = read_manifest(res.root), stages(cfg)
        keys = hashes(all_stages)
        need = _ancestors(all_stages, part[-1])
        run = [
            s
            for s in need
            if s.name in part or (s.name in may_rerun and not _is_done(manifest, s.name, keys[s.name]))
        ]
        stale = [s.name for s in need if s not in run and not _is_done(manifest, s.name, keys[s.name])]
        if stale:
            opts = " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                            for k, v in sorted(given.items()))  # fmt: skip
            msg = (f"stage(s) {', '.join(stale)} of {res.root} are not done for these settings; run "
                   f"`geneattn run --config {res.config}{' ' + opts if opts else ''}` instead")  # fmt: skip
            raise InputError(msg)
        _write_config(res, cfg)
        names = {s.name for s in run}
        upstream = {d: keys[d] for s in run for d in s.deps if d not in names}
        return run_stages(_pin_torch_threads(run), res.root, ctx=Context(res.root, cfg), force=list(part),
                          given=upstream)  # fmt: skip


def stats_of_results(results_dir: str, **overrides: object) -> str:
    """`geneattn stats`: re-run the study's statistics of a results directory through the engine.

    ``overrides`` (``n_boot=10``, ...; None: not given) change the saved configuration, which is
    written back to ``config.toml``. Returns the stats stage's summary.
    """
    manifest = run_part(results_dir, STATS_PART, dict(overrides), may_rerun=_STATS_MAY_RERUN)
    return str(manifest["stages"]["stats"].get("summary") or "")


def rebuild_report(results_dir: str) -> str:
    """`geneattn report`: figures and ``report.html`` of an existing results directory (through the engine)."""
    run_part(results_dir, REPORT_PART, {})
    return str(Results(results_dir).report)
